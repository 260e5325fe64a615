//! Reconciliation by content: what the engine does when UIDs stop being enough.
//!
//! - A folder recreated on either side (UIDVALIDITY changed): the stored map is re-keyed by
//!   matching messages by size + header fingerprint (source) or full fingerprint
//!   (destination), never by re-copying blindly.
//! - A message moved between folders on the source: it vanishes from one folder and
//!   appears in another with the same size and header; the destination moves its copy
//!   (UID MOVE, or COPY + expunge) instead of uploading it again.
//! - A folder gone from the source: its destination folder is deleted only if mailshift
//!   created it and it holds nothing but mail mailshift copied.

use mailshift_core::Result;
use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::folder::FolderPlan;
use mailshift_core::job::parse_range_key;
use mailshift_core::ports::{
    CopiedMessage, FolderState, FolderStatus, MailSource, MailTarget, PendingBatch, PendingItem,
    StateStore, Transfer,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// How many header sections to ask for at once.
const HEADER_CHUNK: usize = 500;

type Key = (u32, Fingerprint);

/// Source UIDs by (size, header fingerprint), in UID order.
async fn index_source(source: &mut dyn MailSource, uids: &[u32]) -> Result<HashMap<Key, Vec<u32>>> {
    let mut by_key: HashMap<Key, Vec<u32>> = HashMap::new();
    for chunk in uids.chunks(HEADER_CHUNK) {
        for h in source.fetch_headers(chunk).await? {
            by_key
                .entry((h.size, Fingerprint::of(&h.header)))
                .or_default()
                .push(h.uid);
        }
    }
    for v in by_key.values_mut() {
        // Pop from the back gives the lowest UID first.
        v.sort_unstable_by(|a, b| b.cmp(a));
    }
    Ok(by_key)
}

/// The source folder was recreated: re-key the map onto the new UIDs by content, remove
/// from the destination what the new folder no longer has (when deletions are on), and
/// leave the rest to be copied. Returns a note for the report.
#[allow(clippy::too_many_arguments)]
pub async fn source_recreated(
    source: &mut dyn MailSource,
    target: &mut dyn MailTarget,
    store: &dyn StateStore,
    state: &mut FolderState,
    known: &mut HashMap<u32, CopiedMessage>,
    old: u32,
    now: &FolderStatus,
    delete: bool,
) -> Result<String> {
    let uids = source.uids().await?;
    let mut by_key = index_source(source, &uids).await?;
    let mut entries: Vec<CopiedMessage> = known.drain().map(|(_, v)| v).collect();
    entries.sort_by_key(|c| c.source_uid);
    let mut kept = Vec::new();
    let mut lost = Vec::new();
    for c in entries {
        let new_uid = c
            .header_fingerprint
            .and_then(|h| by_key.get_mut(&(c.size, h)))
            .and_then(Vec::pop);
        match new_uid {
            Some(uid) => kept.push(CopiedMessage {
                source_uid: uid,
                ..c
            }),
            None => lost.push(c),
        }
    }
    let mut removed = 0usize;
    if delete && target.capabilities().uidplus {
        let dest: Vec<u32> = lost.iter().filter_map(|c| c.dest_uid).collect();
        for chunk in dest.chunks(1000) {
            target.expunge(chunk).await?;
        }
        removed = dest.len();
    }
    state.source_uidvalidity = Some(now.uidvalidity);
    // Everything not in the re-keyed map is copied by the pass that follows.
    state.highest_uid = 0;
    state.highest_modseq = None;
    store.replace_messages(state, &kept).await?;
    let note = format!(
        "the source folder was recreated (UIDVALIDITY {old} -> {}): {} message(s) recognised \
         by content and kept, {removed} no longer there removed from the destination{}, the \
         rest copied",
        now.uidvalidity,
        kept.len(),
        if lost.len() > removed {
            format!(", {} kept on the destination", lost.len() - removed)
        } else {
            String::new()
        }
    );
    known.extend(kept.into_iter().map(|c| (c.source_uid, c)));
    Ok(note)
}

/// The destination folder was recreated: find each mapped message there again by its full
/// fingerprint; what is no longer there is copied again by the pass that follows.
pub async fn dest_recreated(
    target: &mut dyn MailTarget,
    store: &dyn StateStore,
    state: &mut FolderState,
    known: &mut HashMap<u32, CopiedMessage>,
    old: u32,
    now: &FolderStatus,
) -> Result<String> {
    let located = target.locate_since(1).await?;
    let mut by_fp: HashMap<Fingerprint, Vec<u32>> = HashMap::new();
    for m in located.iter().rev() {
        by_fp.entry(m.fingerprint).or_default().push(m.uid);
    }
    let mut entries: Vec<CopiedMessage> = known.drain().map(|(_, v)| v).collect();
    entries.sort_by_key(|c| c.source_uid);
    let mut kept = Vec::new();
    let mut missing = 0usize;
    for c in entries {
        match by_fp.get_mut(&c.fingerprint).and_then(Vec::pop) {
            Some(uid) => kept.push(CopiedMessage {
                dest_uid: Some(uid),
                ..c
            }),
            None => missing += 1,
        }
    }
    state.dest_uidvalidity = Some(now.uidvalidity);
    state.highest_uid = 0;
    store.replace_messages(state, &kept).await?;
    known.extend(kept.iter().cloned().map(|c| (c.source_uid, c)));
    Ok(format!(
        "the destination folder was recreated (UIDVALIDITY {old} -> {}): {} message(s) found \
         there again by content, {missing} copied again",
        now.uidvalidity,
        kept.len()
    ))
}

/// What the mailbox-level reconciliation did.
#[derive(Debug, Default)]
pub struct MailboxChanges {
    /// Messages moved on the destination, by source folder (raw name) they moved into.
    pub moved_in: HashMap<String, u64>,
    pub notes: Vec<String>,
}

/// One source folder's view before the folder passes.
struct View {
    state: FolderState,
    known: Vec<CopiedMessage>,
    /// Mapped source UIDs no longer in the folder.
    vanished: Vec<u32>,
    /// UIDs in the folder that are in neither the map nor below the checkpoint.
    new: Vec<u32>,
    source_uidvalidity: u32,
}

/// Before the folder passes of an incremental run: detects messages moved between source
/// folders and moves their copies on the destination, then deals with folders that are
/// gone from the source. `listed` holds every folder name on the source (excluded ones
/// too), so an excluded folder is never mistaken for a deleted one.
pub async fn mailbox(
    source: &mut dyn MailSource,
    target: &mut dyn MailTarget,
    store: &dyn StateStore,
    migration: Uuid,
    planned: &[FolderPlan],
    listed: &HashSet<String>,
    delete: bool,
) -> Result<MailboxChanges> {
    let mut out = MailboxChanges::default();
    let states = store.folders(migration).await?;
    if states.is_empty() {
        return Ok(out);
    }
    let plan_by_src: HashMap<&str, &FolderPlan> =
        planned.iter().map(|p| (p.source_raw.as_str(), p)).collect();
    let mut views: BTreeMap<String, View> = BTreeMap::new();
    let mut gone: Vec<(FolderState, Vec<CopiedMessage>)> = Vec::new();
    // UID-range slices of first copies are not folders; their UIDs belong to them.
    let mut reserved: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
    for st in &states {
        if let Some((folder, lo, hi)) = parse_range_key(&st.source_folder) {
            reserved
                .entry(folder.to_string())
                .or_default()
                .push((lo, hi));
        }
    }
    let unreserved = |folder: &str, u: u32| {
        !reserved
            .get(folder)
            .is_some_and(|r| r.iter().any(|(lo, hi)| u >= *lo && u <= *hi))
    };
    for st in states {
        if parse_range_key(&st.source_folder).is_some() {
            continue;
        }
        if !listed.contains(&st.source_folder) {
            let known = store.copied(st.id).await?;
            gone.push((st, known));
            continue;
        }
        if !plan_by_src.contains_key(st.source_folder.as_str()) {
            continue; // excluded now: leave it be
        }
        let status = source.examine(&st.source_folder).await?;
        if st.source_uidvalidity != Some(status.uidvalidity) || st.pending.is_some() {
            continue; // the folder pass reconciles these first
        }
        // CONDSTORE: an unchanged HIGHESTMODSEQ means no message came or went.
        if st.highest_modseq.is_some() && st.highest_modseq == status.highest_modseq {
            continue;
        }
        let uids = source.uids().await?;
        let present: HashSet<u32> = uids.iter().copied().collect();
        let known = store.copied(st.id).await?;
        let mapped: HashSet<u32> = known.iter().map(|c| c.source_uid).collect();
        let vanished = mapped
            .iter()
            .copied()
            .filter(|u| !present.contains(u))
            .collect();
        let new = uids
            .iter()
            .copied()
            .filter(|u| *u > st.highest_uid && !mapped.contains(u))
            .filter(|u| unreserved(&st.source_folder, *u))
            .collect();
        views.insert(
            st.source_folder.clone(),
            View {
                state: st,
                known,
                vanished,
                new,
                source_uidvalidity: status.uidvalidity,
            },
        );
    }
    let any_vanished =
        views.values().any(|v| !v.vanished.is_empty()) || gone.iter().any(|(_, k)| !k.is_empty());
    if any_vanished {
        // Folders new to mailshift may hold moved messages too.
        for p in planned {
            if views.contains_key(&p.source_raw) {
                continue;
            }
            let st = store.folder(migration, &p.source_raw, &p.dest_raw).await?;
            if st.highest_uid > 0 || st.pending.is_some() {
                continue; // known folder, unchanged or handled by its pass
            }
            let status = source.examine(&p.source_raw).await?;
            let known = store.copied(st.id).await?;
            let mapped: HashSet<u32> = known.iter().map(|c| c.source_uid).collect();
            let new = source
                .uids()
                .await?
                .into_iter()
                .filter(|u| !mapped.contains(u) && unreserved(&p.source_raw, *u))
                .collect();
            views.insert(
                p.source_raw.clone(),
                View {
                    state: st,
                    known,
                    vanished: Vec::new(),
                    new,
                    source_uidvalidity: status.uidvalidity,
                },
            );
        }
        move_messages(source, target, store, &views, &gone, delete, &mut out).await?;
    }
    for (st, _) in gone {
        let known = store.copied(st.id).await?;
        remove_gone_folder(target, store, &st, &known, delete, &mut out).await?;
    }
    Ok(out)
}

/// A message to move: from (source folder, entry) to (source folder, new source UID).
struct Move {
    from: String,
    entry: CopiedMessage,
    to: String,
    new_uid: u32,
}

async fn move_messages(
    source: &mut dyn MailSource,
    target: &mut dyn MailTarget,
    store: &dyn StateStore,
    views: &BTreeMap<String, View>,
    gone: &[(FolderState, Vec<CopiedMessage>)],
    delete: bool,
    out: &mut MailboxChanges,
) -> Result<()> {
    // Candidates: vanished entries we can recognise and whose copy we can address.
    let mut candidates: HashMap<Key, Vec<(String, CopiedMessage)>> = HashMap::new();
    let mut add = |folder: &str, c: &CopiedMessage| {
        if let (Some(h), Some(_)) = (c.header_fingerprint, c.dest_uid) {
            candidates
                .entry((c.size, h))
                .or_default()
                .push((folder.to_string(), c.clone()));
        }
    };
    for (name, v) in views.iter() {
        let vanished: HashSet<u32> = v.vanished.iter().copied().collect();
        for c in v.known.iter().filter(|c| vanished.contains(&c.source_uid)) {
            add(name, c);
        }
    }
    for (st, known) in gone.iter() {
        for c in known {
            add(&st.source_folder, c);
        }
    }
    if candidates.is_empty() {
        return Ok(());
    }
    let mut moves: Vec<Move> = Vec::new();
    for (name, v) in views.iter() {
        if v.new.is_empty() {
            continue;
        }
        source.examine(name).await?;
        let index = index_source(source, &v.new).await?;
        let mut found: Vec<(u32, Key)> = index
            .into_iter()
            .flat_map(|(k, uids)| uids.into_iter().map(move |u| (u, k)))
            .collect();
        found.sort_unstable_by_key(|(u, _)| *u);
        for (uid, key) in found {
            if let Some((from, entry)) = candidates.get_mut(&key).and_then(Vec::pop) {
                moves.push(Move {
                    from,
                    entry,
                    to: name.clone(),
                    new_uid: uid,
                });
            }
        }
    }
    if moves.is_empty() {
        return Ok(());
    }

    let gone_states: HashMap<String, FolderState> = gone
        .iter()
        .map(|(s, _)| (s.source_folder.clone(), s.clone()))
        .collect();
    let state_of = |name: &str| -> Option<FolderState> {
        views
            .get(name)
            .map(|v| v.state.clone())
            .or_else(|| gone_states.get(name).cloned())
    };
    // Removing a single message from the old folder needs MOVE or UID EXPUNGE (UIDPLUS);
    // without either, the message is copied to its new folder and kept in the old one.
    let can_remove = target.capabilities().move_ || target.capabilities().uidplus;
    if delete && !can_remove && !moves.is_empty() {
        out.notes.push(format!(
            "{} message(s) moved on the source are copied to their new folder and also kept \
             in the old one: the destination has neither MOVE nor UIDPLUS",
            moves.len()
        ));
    }
    let how = if delete && can_remove {
        Transfer::Move
    } else {
        Transfer::Copy
    };
    let mut by_dest: BTreeMap<String, Vec<Move>> = BTreeMap::new();
    for m in moves {
        by_dest.entry(m.to.clone()).or_default().push(m);
    }
    let mut forgotten: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (to, group) in by_dest {
        let Some(view) = views.get(&to) else {
            continue;
        };
        let mut bstate = view.state.clone();
        let bstatus = target.select(&bstate.dest_folder).await?;
        if bstate
            .dest_uidvalidity
            .is_some_and(|v| v != bstatus.uidvalidity)
        {
            continue; // its folder pass reconciles the destination first
        }
        bstate.source_uidvalidity = Some(view.source_uidvalidity);
        bstate.dest_uidvalidity = Some(bstatus.uidvalidity);
        // Announce the arrivals: if we die after the MOVE, the folder pass finds them.
        let pending = PendingBatch {
            dest_uidvalidity: bstatus.uidvalidity,
            dest_uidnext: bstatus.uidnext.unwrap_or(1),
            items: group
                .iter()
                .map(|m| PendingItem {
                    source_uid: m.new_uid,
                    size: m.entry.size,
                    fingerprint: m.entry.fingerprint.to_hex(),
                    flags: m.entry.flags.to_storage(),
                    header_fingerprint: m.entry.header_fingerprint.map(|h| h.to_hex()),
                })
                .collect(),
        };
        store.set_pending(bstate.id, Some(&pending)).await?;
        let mut arrived: Vec<CopiedMessage> = Vec::new();
        let mut all_known = true;
        let mut by_src: BTreeMap<String, Vec<&Move>> = BTreeMap::new();
        for m in &group {
            by_src.entry(m.from.clone()).or_default().push(m);
        }
        for (from, ms) in by_src {
            let Some(astate) = state_of(&from) else {
                continue;
            };
            let astatus = target.select(&astate.dest_folder).await?;
            if astate.dest_uidvalidity != Some(astatus.uidvalidity) {
                continue;
            }
            let dest_uids: Vec<u32> = ms.iter().filter_map(|m| m.entry.dest_uid).collect();
            let pairs: HashMap<u32, u32> = target
                .transfer(&dest_uids, &bstate.dest_folder, how)
                .await?
                .into_iter()
                .collect();
            for m in ms {
                let new_dest = m.entry.dest_uid.and_then(|d| pairs.get(&d).copied());
                all_known &= new_dest.is_some();
                arrived.push(CopiedMessage {
                    source_uid: m.new_uid,
                    dest_uid: new_dest,
                    ..m.entry.clone()
                });
                forgotten
                    .entry(from.clone())
                    .or_default()
                    .push(m.entry.source_uid);
            }
            out.notes.push(format!(
                "{} {} message(s) on the destination from '{}' to '{}' (moved on the source; not uploaded again)",
                if how == Transfer::Move {
                    "moved"
                } else {
                    "copied"
                },
                dest_uids.len(),
                astate.dest_folder,
                bstate.dest_folder
            ));
        }
        *out.moved_in.entry(to.clone()).or_default() += arrived.len() as u64;
        if all_known {
            store.commit_batch(&bstate, &arrived, &[]).await?;
        }
        // Otherwise the pending batch stays: the folder pass locates the arrivals by
        // fingerprint on the destination (servers without COPYUID).
    }
    if how == Transfer::Move {
        for (from, uids) in forgotten {
            if let Some(st) = state_of(&from) {
                store.apply_changes(&st, &[], &uids).await?;
            }
        }
    }
    Ok(())
}

/// A folder gone from the source: delete its destination copy if mailshift created it
/// and it holds only mail mailshift copied; otherwise leave it and say so.
async fn remove_gone_folder(
    target: &mut dyn MailTarget,
    store: &dyn StateStore,
    st: &FolderState,
    known: &[CopiedMessage],
    delete: bool,
    out: &mut MailboxChanges,
) -> Result<()> {
    let name = &st.dest_folder;
    if !delete {
        out.notes.push(format!(
            "source folder '{}' is gone; destination folder '{name}' is kept (deletions are off)",
            st.source_folder
        ));
        return Ok(());
    }
    if !st.dest_created {
        out.notes.push(format!(
            "source folder '{}' is gone; destination folder '{name}' existed before mailshift \
             and is left alone",
            st.source_folder
        ));
        return Ok(());
    }
    let status = match target.select(name).await {
        Ok(s) => s,
        Err(_) => {
            // Already gone on the destination too.
            store.remove_folder(st.id).await?;
            return Ok(());
        }
    };
    if status.exists as usize > known.len() {
        out.notes.push(format!(
            "source folder '{}' is gone; destination folder '{name}' holds {} message(s) \
             mailshift did not copy, so it is kept",
            st.source_folder,
            status.exists as usize - known.len()
        ));
        return Ok(());
    }
    match target.delete_folder(name).await {
        Ok(()) => {
            store.remove_folder(st.id).await?;
            out.notes.push(format!(
                "deleted destination folder '{name}': its source folder is gone and it held \
                 only mail mailshift had copied ({} message(s))",
                known.len()
            ));
        }
        Err(e) => out.notes.push(format!(
            "source folder '{}' is gone, but destination folder '{name}' could not be deleted: {}",
            st.source_folder, e.message
        )),
    }
    Ok(())
}
