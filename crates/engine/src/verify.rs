//! `mailshift verify`: compares both servers folder by folder, independently of any
//! stored state, and names every message that is missing, extra or different.
//!
//! Folders are paired exactly as `migrate` pairs them ([`map_folders`]); source folders
//! that `--map` merges into one destination folder are compared together with it. In each
//! pair, messages are matched as multisets by size + SHA-256 of the header section (or of
//! the full content with `deep`), then the flags (normalised, without `\Recent`) and
//! internal dates (as instants: servers may keep the instant but not the zone) of matched
//! messages are compared. Both sides are only read (EXAMINE, BODY.PEEK); headers are
//! fetched in chunks and only fingerprints are kept, so memory stays bounded.

use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::flags::FlagSet;
use mailshift_core::folder::{FolderPath, FolderPlan, FolderRules, ListedFolder, map_folders};
use mailshift_core::ports::MailSource;
use mailshift_core::report::FolderError;
use mailshift_core::{Error, ErrorKind, Result};
use std::collections::{BTreeMap, HashMap, HashSet};

/// UIDs whose header sections are fetched in one command.
const HEADER_CHUNK: usize = 500;
/// Full messages fetched in one command with `deep` (a larger message travels alone).
const DEEP_CHUNK_MESSAGES: usize = 50;
const DEEP_CHUNK_BYTES: u64 = 16 << 20;

/// A message named as a person finds it in a mail client.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MessageRef {
    /// The folder holding it, as its own server names it (UTF-8).
    pub folder: String,
    pub uid: u32,
    pub size: u32,
    pub flags: FlagSet,
    /// INTERNALDATE as the server sent it.
    #[serde(serialize_with = "mailshift_core::time::imap_date")]
    pub internal_date: String,
    /// From the message's headers (absent when it has none or they do not parse).
    #[serde(serialize_with = "mailshift_core::time::imap_date_opt")]
    pub date: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
}

/// The same message on both sides, with different flags or internal date.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    pub source: MessageRef,
    pub dest: MessageRef,
    pub flags_differ: bool,
    pub internal_date_differs: bool,
}

impl Difference {
    /// "flags (\Seen) on the source, (\Flagged \Seen) on the destination; ...".
    pub fn what(&self) -> String {
        let mut what = Vec::new();
        if self.flags_differ {
            what.push(format!(
                "flags {} on the source, {} on the destination",
                self.source.flags, self.dest.flags
            ));
        }
        if self.internal_date_differs {
            what.push(format!(
                "internal date {} on the source, {} on the destination",
                self.source.internal_date, self.dest.internal_date
            ));
        }
        what.join("; ")
    }
}

/// What differs between one destination folder and the source folder(s) mapped to it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FolderCheck {
    /// Source folders (display names); several when `--map` merges them.
    pub sources: Vec<String>,
    pub dest: String,
    pub source_messages: usize,
    pub dest_messages: usize,
    /// RFC822.SIZE totals (the source's is 0 when its destination folder is missing).
    pub source_bytes: u64,
    pub dest_bytes: u64,
    /// The destination folder does not exist (its source messages are not listed one by
    /// one in `missing`).
    pub dest_folder_missing: bool,
    /// On the source, not on the destination.
    pub missing: Vec<MessageRef>,
    /// On the destination, not on the source.
    pub extra: Vec<MessageRef>,
    /// On both, with different flags or internal date.
    pub different: Vec<Difference>,
    /// The pair could not be compared (the other fields are then incomplete).
    pub error: Option<FolderError>,
}

impl FolderCheck {
    fn new(sources: Vec<String>, dest: &str) -> Self {
        FolderCheck {
            sources,
            dest: dest.to_string(),
            ..Default::default()
        }
    }

    /// `"Sent Items"`, or `"Sent + Sent Items"` for merged folders.
    pub fn source_label(&self) -> String {
        self.sources.join(" + ")
    }

    /// Source messages not on the destination (all of them when its folder is missing).
    pub fn missing_count(&self) -> usize {
        if self.dest_folder_missing {
            self.source_messages
        } else {
            self.missing.len()
        }
    }

    pub fn in_sync(&self) -> bool {
        self.error.is_none()
            && !self.dest_folder_missing
            && self.missing.is_empty()
            && self.extra.is_empty()
            && self.different.is_empty()
    }
}

/// A selectable destination folder that no source folder maps to, holding mail.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DestOnlyFolder {
    pub folder: String,
    pub messages: u32,
}

/// The whole comparison of one mailbox.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Full contents were compared (`--deep`), not sizes and header sections.
    pub deep: bool,
    /// In the order `migrate` reports folders (INBOX first, then the tree).
    pub folders: Vec<FolderCheck>,
    /// Source folders left out by `--exclude`.
    pub excluded: Vec<String>,
    /// Folder-mapping notes (merged folders, renamed components).
    pub notes: Vec<String>,
    /// Destination folders with mail that nothing maps to (informative, not a difference).
    pub dest_only: Vec<DestOnlyFolder>,
    /// What stopped the comparison before every folder was compared.
    pub errors: Vec<FolderError>,
}

impl VerifyReport {
    /// Every folder was compared (no folder error, no run error).
    pub fn complete(&self) -> bool {
        self.errors.is_empty() && self.folders.iter().all(|f| f.error.is_none())
    }

    /// Complete, and every folder pair holds the same messages with the same flags/dates.
    pub fn in_sync(&self) -> bool {
        self.complete() && self.folders.iter().all(FolderCheck::in_sync)
    }

    pub fn source_messages(&self) -> usize {
        self.folders.iter().map(|f| f.source_messages).sum()
    }

    pub fn missing(&self) -> usize {
        self.folders.iter().map(FolderCheck::missing_count).sum()
    }

    pub fn extra(&self) -> usize {
        self.folders.iter().map(|f| f.extra.len()).sum()
    }

    pub fn different(&self) -> usize {
        self.folders.iter().map(|f| f.different.len()).sum()
    }
}

// ---------------------------------------------------------------------------------------
// Matching (pure)

/// One message as a listing saw it, reduced to what verification compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Index of the folder it was listed in (several source folders may share a
    /// destination folder).
    pub folder: usize,
    pub uid: u32,
    pub size: u32,
    /// Of the header section, or of the full content with `deep`.
    pub fingerprint: Fingerprint,
    pub flags: FlagSet,
    pub internal_date: String,
}

/// How the messages of a folder pair correspond.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matching {
    /// Source messages with no counterpart, by (folder, UID).
    pub missing: Vec<Seen>,
    /// Destination messages with no counterpart, by UID.
    pub extra: Vec<Seen>,
    /// (source, destination) pairs of the same content whose flags or date differ.
    pub different: Vec<(Seen, Seen)>,
    /// Pairs identical in content, flags and date.
    pub identical: usize,
}

/// An internal date reduced to what must be equal: the instant when it parses, else the
/// text itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum DateKey {
    Instant(i64),
    Text(String),
}

fn date_key(s: &str) -> DateKey {
    match instant(s) {
        Some(t) => DateKey::Instant(t),
        None => DateKey::Text(s.trim().to_string()),
    }
}

/// Whether two IMAP internal dates denote the same instant.
pub fn same_date(a: &str, b: &str) -> bool {
    date_key(a) == date_key(b)
}

/// Matches source and destination messages as multisets. A content key (size +
/// fingerprint) may occur several times on each side (duplicates are legitimate): exact
/// copies (same flags and date) are paired first, so swapped duplicates are no
/// difference; the remaining copies of the same content are paired as "different", and
/// what is left over is missing or extra.
pub fn match_messages(mut source: Vec<Seen>, mut dest: Vec<Seen>) -> Matching {
    source.sort_by_key(|s| (s.folder, s.uid));
    dest.sort_by_key(|d| (d.folder, d.uid));
    type Exact = (u32, Fingerprint, FlagSet, DateKey);
    let exact = |m: &Seen| -> Exact {
        (
            m.size,
            m.fingerprint,
            m.flags.clone(),
            date_key(&m.internal_date),
        )
    };

    let mut by_exact: HashMap<Exact, Vec<Seen>> = HashMap::new();
    for s in source.into_iter().rev() {
        by_exact.entry(exact(&s)).or_default().push(s);
    }
    let mut out = Matching::default();
    let mut dest_left = Vec::new();
    for d in dest {
        match by_exact.get_mut(&exact(&d)).and_then(Vec::pop) {
            Some(_) => out.identical += 1,
            None => dest_left.push(d),
        }
    }

    let mut source_left: Vec<Seen> = by_exact.into_values().flatten().collect();
    source_left.sort_by_key(|s| (s.folder, s.uid));
    let mut by_content: HashMap<(u32, Fingerprint), Vec<Seen>> = HashMap::new();
    for s in source_left.into_iter().rev() {
        by_content
            .entry((s.size, s.fingerprint))
            .or_default()
            .push(s);
    }
    for d in dest_left {
        match by_content
            .get_mut(&(d.size, d.fingerprint))
            .and_then(Vec::pop)
        {
            Some(s) => out.different.push((s, d)),
            None => out.extra.push(d),
        }
    }
    out.missing = by_content.into_values().flatten().collect();
    out.missing.sort_by_key(|s| (s.folder, s.uid));
    out.different.sort_by_key(|(s, _)| (s.folder, s.uid));
    out
}

/// Seconds since the epoch of an IMAP date-time (`dd-Mon-yyyy hh:mm:ss +zzzz`, day
/// possibly space-padded).
fn instant(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.trim().split_once(' ')?;
    let mut d = date.split('-');
    let day: i64 = d.next()?.trim().parse().ok()?;
    let month_name = d.next()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(month_name))? as i64
        + 1;
    let year: i64 = d.next()?.parse().ok()?;
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    let zone = zone.trim();
    let sign = match zone.as_bytes().first()? {
        b'-' => -1,
        b'+' => 1,
        _ => return None,
    };
    let z: i64 = zone.get(1..)?.parse().ok()?;
    let offset = sign * ((z / 100) * 3600 + (z % 100) * 60);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec - offset)
}

/// Groups of at most `max_messages` UIDs and `max_bytes` bytes (a larger message alone).
fn chunks_by_size(messages: &[(u32, u32)], max_messages: usize, max_bytes: u64) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0u64;
    for &(uid, size) in messages {
        let size = u64::from(size);
        if !cur.is_empty() && (cur.len() >= max_messages || bytes + size > max_bytes) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        cur.push(uid);
        bytes += size;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Talking to the ports

/// Lists the examined folder as fingerprints (`folder` is the index recorded in each).
async fn index(side: &mut dyn MailSource, folder: usize, deep: bool) -> Result<Vec<Seen>> {
    let mut out = Vec::new();
    if deep {
        let listed: Vec<(u32, u32)> = side
            .list_messages(1)
            .await?
            .into_iter()
            .map(|m| (m.uid, m.size))
            .collect();
        out.reserve(listed.len());
        let size_of: std::collections::HashMap<u32, u32> = listed.iter().copied().collect();
        for chunk in chunks_by_size(&listed, DEEP_CHUNK_MESSAGES, DEEP_CHUNK_BYTES) {
            let largest = chunk
                .iter()
                .filter_map(|u| size_of.get(u))
                .map(|s| u64::from(*s))
                .max()
                .unwrap_or(0);
            for m in side.fetch_messages(&chunk, largest).await? {
                out.push(Seen {
                    folder,
                    uid: m.uid,
                    size: u32::try_from(m.raw.len()).unwrap_or(u32::MAX),
                    fingerprint: Fingerprint::of(&m.raw),
                    flags: m.flags,
                    internal_date: m.internal_date,
                });
            }
        }
    } else {
        let uids = side.uids().await?;
        out.reserve(uids.len());
        for chunk in uids.chunks(HEADER_CHUNK) {
            for h in side.fetch_headers(chunk).await? {
                out.push(Seen {
                    folder,
                    uid: h.uid,
                    size: h.size,
                    fingerprint: Fingerprint::of_header(&h.header),
                    flags: h.flags,
                    internal_date: h.internal_date,
                });
            }
        }
    }
    Ok(out)
}

/// Date, sender and subject of a message's header section.
fn describe_header(header: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    match mail_parser::MessageParser::default().parse_headers(header) {
        Some(p) => (
            p.date().map(|d| d.to_rfc3339()),
            p.from().and_then(|a| a.first()).and_then(|a| {
                a.address()
                    .map(str::to_string)
                    .or_else(|| a.name().map(str::to_string))
            }),
            p.subject().map(str::to_string),
        ),
        None => (None, None, None),
    }
}

/// Fills in date, sender and subject of messages of the examined folder (problems only).
async fn describe(side: &mut dyn MailSource, refs: &mut [&mut MessageRef]) -> Result<()> {
    let uids: Vec<u32> = refs.iter().map(|r| r.uid).collect();
    for chunk in uids.chunks(HEADER_CHUNK) {
        let headers: HashMap<u32, Vec<u8>> = side
            .fetch_headers(chunk)
            .await?
            .into_iter()
            .map(|h| (h.uid, h.header))
            .collect();
        for r in refs.iter_mut() {
            if let Some(h) = headers.get(&r.uid) {
                (r.date, r.from, r.subject) = describe_header(h);
            }
        }
    }
    Ok(())
}

fn reference(s: Seen, folder: &str) -> MessageRef {
    MessageRef {
        folder: folder.to_string(),
        uid: s.uid,
        size: s.size,
        flags: s.flags,
        internal_date: s.internal_date,
        ..Default::default()
    }
}

/// The source folders mapped to one destination folder.
struct Group<'a> {
    dest_raw: &'a str,
    dest_display: &'a str,
    sources: Vec<&'a FolderPlan>,
}

/// Compares one destination folder with its source folder(s).
async fn check_group(
    src: &mut dyn MailSource,
    dst: &mut dyn MailSource,
    group: &Group<'_>,
    dest_exists: bool,
    deep: bool,
    check: &mut FolderCheck,
) -> Result<()> {
    let with_src =
        |e: Error, plan: &FolderPlan| e.context(format!("source folder '{}'", plan.source_display));
    if !dest_exists {
        check.dest_folder_missing = true;
        for plan in &group.sources {
            let status = src
                .examine(&plan.source_raw)
                .await
                .map_err(|e| with_src(e, plan))?;
            check.source_messages += status.exists as usize;
        }
        return Ok(());
    }
    let dest_label = format!("destination folder '{}'", group.dest_display);
    let source_side = async {
        let mut all = Vec::new();
        for (i, plan) in group.sources.iter().enumerate() {
            src.examine(&plan.source_raw)
                .await
                .map_err(|e| with_src(e, plan))?;
            all.extend(
                index(&mut *src, i, deep)
                    .await
                    .map_err(|e| with_src(e, plan))?,
            );
        }
        Ok::<_, Error>(all)
    };
    let dest_side = async {
        dst.examine(group.dest_raw).await?;
        index(&mut *dst, 0, deep).await
    };
    let (s, d) = tokio::join!(source_side, dest_side);
    let (s, d) = (s?, d.map_err(|e| e.context(&dest_label))?);
    check.source_messages = s.len();
    check.dest_messages = d.len();
    check.source_bytes = s.iter().map(|m| u64::from(m.size)).sum();
    check.dest_bytes = d.iter().map(|m| u64::from(m.size)).sum();
    let m = match_messages(s, d);
    tracing::info!(
        dest = group.dest_display,
        identical = m.identical,
        missing = m.missing.len(),
        extra = m.extra.len(),
        different = m.different.len(),
        "folder compared"
    );

    let name = |i: usize| {
        group
            .sources
            .get(i)
            .map(|p| p.source_display.as_str())
            .unwrap_or("")
    };
    check.missing = m
        .missing
        .into_iter()
        .map(|s| {
            let folder = name(s.folder);
            reference(s, folder)
        })
        .collect();
    check.extra = m
        .extra
        .into_iter()
        .map(|d| reference(d, group.dest_display))
        .collect();
    check.different = m
        .different
        .into_iter()
        .map(|(s, d)| Difference {
            flags_differ: s.flags != d.flags,
            internal_date_differs: !same_date(&s.internal_date, &d.internal_date),
            source: {
                let folder = name(s.folder);
                reference(s, folder)
            },
            dest: reference(d, group.dest_display),
        })
        .collect();

    // Name the problems: destination first (it is still examined), then each source folder.
    let mut dest_refs: Vec<&mut MessageRef> = check
        .extra
        .iter_mut()
        .chain(check.different.iter_mut().map(|x| &mut x.dest))
        .collect();
    if !dest_refs.is_empty() {
        describe(&mut *dst, &mut dest_refs)
            .await
            .map_err(|e| e.context(&dest_label))?;
    }
    for plan in &group.sources {
        let folder = plan.source_display.as_str();
        let mut refs: Vec<&mut MessageRef> = check
            .missing
            .iter_mut()
            .chain(check.different.iter_mut().map(|x| &mut x.source))
            .filter(|r| r.folder == folder)
            .collect();
        if refs.is_empty() {
            continue;
        }
        src.examine(&plan.source_raw)
            .await
            .map_err(|e| with_src(e, plan))?;
        describe(&mut *src, &mut refs)
            .await
            .map_err(|e| with_src(e, plan))?;
    }
    Ok(())
}

/// Errors after which the sessions cannot go on (the rest would fail the same way).
fn ends_the_run(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::Network | ErrorKind::Tls | ErrorKind::Auth | ErrorKind::Insecure
    )
}

/// Compares every folder pair `migrate` would copy. Fails only when the folder lists
/// cannot be read; a folder that cannot be compared is reported in its [`FolderCheck`],
/// and a lost connection ends the run with what was compared so far.
pub async fn verify(
    src: &mut dyn MailSource,
    dst: &mut dyn MailSource,
    rules: &FolderRules,
    deep: bool,
) -> Result<VerifyReport> {
    let (s, d) = tokio::join!(src.list_folders(), dst.list_folders());
    let (src_folders, src_delim) = s.map_err(|e| e.context("listing the source folders"))?;
    let (dst_folders, dst_delim) = d.map_err(|e| e.context("listing the destination folders"))?;
    let mapping = map_folders(&src_folders, src_delim, &dst_folders, dst_delim, rules)?;
    let mut report = VerifyReport {
        deep,
        excluded: mapping.excluded.clone(),
        notes: mapping.notes.clone(),
        ..Default::default()
    };

    // One group per destination folder, in the mapping's order (INBOX first).
    let mut groups: Vec<Group<'_>> = Vec::new();
    for plan in &mapping.folders {
        match groups.iter_mut().find(|g| g.dest_raw == plan.dest_raw) {
            Some(g) => g.sources.push(plan),
            None => groups.push(Group {
                dest_raw: &plan.dest_raw,
                dest_display: &plan.dest_display,
                sources: vec![plan],
            }),
        }
    }
    let selectable: HashSet<&str> = dst_folders
        .iter()
        .filter(|f| f.selectable)
        .map(|f| f.raw.as_str())
        .collect();
    let exists = |raw: &str| raw.eq_ignore_ascii_case("INBOX") || selectable.contains(raw);

    for (n, group) in groups.iter().enumerate() {
        let sources = group
            .sources
            .iter()
            .map(|p| p.source_display.clone())
            .collect();
        let mut check = FolderCheck::new(sources, group.dest_display);
        let r = check_group(src, dst, group, exists(group.dest_raw), deep, &mut check).await;
        if let Err(e) = r {
            check.error = Some(FolderError::new(&e.kind, e.message.clone()));
            report.folders.push(check);
            if ends_the_run(&e) {
                let left = groups.len() - n - 1;
                report.errors.push(FolderError::new(
                    &e.kind,
                    format!("{}; {left} more folder(s) not compared", e.message),
                ));
                return Ok(report);
            }
            continue;
        }
        report.folders.push(check);
    }

    report.dest_only = dest_only(dst, &dst_folders, dst_delim, &groups).await;
    Ok(report)
}

/// Selectable destination folders with mail that no source folder maps to.
async fn dest_only(
    dst: &mut dyn MailSource,
    dst_folders: &[ListedFolder],
    dst_delim: Option<char>,
    groups: &[Group<'_>],
) -> Vec<DestOnlyFolder> {
    let mapped: HashSet<&str> = groups.iter().map(|g| g.dest_raw).collect();
    let mut out = BTreeMap::new();
    for f in dst_folders.iter().filter(|f| f.selectable) {
        if mapped.contains(f.raw.as_str())
            || (f.raw.eq_ignore_ascii_case("INBOX")
                && mapped.iter().any(|m| m.eq_ignore_ascii_case("INBOX")))
        {
            continue;
        }
        // Informative only: a folder that cannot be opened is simply not listed.
        if let Ok(status) = dst.examine(&f.raw).await
            && status.exists > 0
        {
            let name =
                FolderPath::from_server(&f.raw, f.delimiter.or(dst_delim)).display(dst_delim);
            out.insert(name, status.exists);
        }
    }
    out.into_iter()
        .map(|(folder, messages)| DestOnlyFolder { folder, messages })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(folder: usize, uid: u32, content: &str, flags: &[&str], date: &str) -> Seen {
        Seen {
            folder,
            uid,
            size: content.len() as u32,
            fingerprint: Fingerprint::of(content.as_bytes()),
            flags: flags.iter().copied().collect(),
            internal_date: date.to_string(),
        }
    }

    const D1: &str = "17-Jul-2023 02:44:25 -0700";
    const D1_UTC: &str = "17-Jul-2023 09:44:25 +0000";
    const D2: &str = "18-Jul-2023 02:44:25 -0700";

    #[test]
    fn instants_ignore_the_zone_spelling() {
        assert_eq!(instant(D1), instant(D1_UTC));
        assert!(instant(D1).is_some());
        assert_eq!(instant(" 1-Jan-1970 00:00:00 +0000"), Some(0));
        assert_eq!(instant("01-Mar-2000 00:00:00 +0000"), Some(951_868_800));
        assert_eq!(instant("garbage"), None);
        assert_eq!(instant("17-Jul-2023 02:44:25 0700"), None);
        assert!(same_date(D1, D1_UTC));
        assert!(!same_date(D1, D2));
        assert!(same_date("odd date", " odd date "));
    }

    #[test]
    fn identical_folders_match_whatever_the_uids() {
        let s = vec![seen(0, 1, "a", &["\\Seen"], D1), seen(0, 2, "b", &[], D2)];
        let d = vec![
            seen(0, 40, "b", &[], D2),
            seen(0, 41, "a", &["\\Seen"], D1_UTC),
        ];
        let m = match_messages(s, d);
        assert_eq!(m.identical, 2);
        assert_eq!(
            m,
            Matching {
                identical: 2,
                ..Default::default()
            }
        );
    }

    #[test]
    fn missing_extra_and_different_are_told_apart() {
        let s = vec![
            seen(0, 1, "kept", &[], D1),
            seen(0, 2, "deleted on the destination", &[], D1),
            seen(0, 3, "re-flagged", &["\\Seen"], D1),
            seen(0, 4, "re-dated", &[], D1),
        ];
        let d = vec![
            seen(0, 10, "kept", &[], D1),
            seen(0, 11, "re-flagged", &["\\Flagged", "\\Seen"], D1),
            seen(0, 12, "re-dated", &[], D2),
            seen(0, 13, "added by hand", &[], D1),
        ];
        let m = match_messages(s, d);
        assert_eq!(m.identical, 1);
        assert_eq!(m.missing.iter().map(|x| x.uid).collect::<Vec<_>>(), vec![2]);
        assert_eq!(m.extra.iter().map(|x| x.uid).collect::<Vec<_>>(), vec![13]);
        let pairs: Vec<(u32, u32)> = m.different.iter().map(|(s, d)| (s.uid, d.uid)).collect();
        assert_eq!(pairs, vec![(3, 11), (4, 12)]);
    }

    #[test]
    fn duplicates_are_counted_as_a_multiset() {
        // The same message three times on the source, twice on the destination.
        let s = vec![
            seen(0, 1, "dup", &[], D1),
            seen(0, 2, "dup", &[], D1),
            seen(0, 3, "dup", &[], D1),
        ];
        let d = vec![seen(0, 7, "dup", &[], D1), seen(0, 8, "dup", &[], D1)];
        let m = match_messages(s, d);
        assert_eq!(m.identical, 2);
        assert_eq!(m.missing.len(), 1);
        assert!(m.extra.is_empty() && m.different.is_empty());
    }

    #[test]
    fn swapped_duplicates_are_no_difference() {
        // Two copies with different flags, listed in the other order on the destination:
        // pairing by position would report two differences.
        let s = vec![
            seen(0, 1, "dup", &["\\Seen"], D1),
            seen(0, 2, "dup", &[], D1),
        ];
        let d = vec![
            seen(0, 5, "dup", &[], D1),
            seen(0, 6, "dup", &["\\Seen"], D1),
        ];
        let m = match_messages(s, d);
        assert_eq!(
            m,
            Matching {
                identical: 2,
                ..Default::default()
            }
        );
    }

    #[test]
    fn same_content_with_different_sizes_is_not_a_match() {
        let mut a = seen(0, 1, "x", &[], D1);
        let mut b = seen(0, 2, "x", &[], D1);
        a.size = 100;
        b.size = 101;
        let m = match_messages(vec![a], vec![b]);
        assert_eq!((m.missing.len(), m.extra.len(), m.identical), (1, 1, 0));
    }

    #[test]
    fn merged_source_folders_share_one_destination() {
        let s = vec![
            seen(0, 1, "from Sent", &[], D1),
            seen(1, 1, "from Sent Items", &[], D1),
            seen(1, 2, "lost", &[], D1),
        ];
        let d = vec![
            seen(0, 1, "from Sent Items", &[], D1),
            seen(0, 2, "from Sent", &[], D1),
        ];
        let m = match_messages(s, d);
        assert_eq!(m.identical, 2);
        assert_eq!(
            m.missing
                .iter()
                .map(|x| (x.folder, x.uid))
                .collect::<Vec<_>>(),
            vec![(1, 2)]
        );
    }

    #[test]
    fn chunks_bound_messages_and_bytes() {
        let msgs: Vec<(u32, u32)> = vec![(1, 10), (2, 10), (3, 100), (4, 10), (5, 10), (6, 10)];
        assert_eq!(
            chunks_by_size(&msgs, 2, 1000),
            vec![vec![1, 2], vec![3, 4], vec![5, 6]]
        );
        assert_eq!(
            chunks_by_size(&msgs, 10, 50),
            vec![vec![1, 2], vec![3], vec![4, 5, 6]]
        );
        assert!(chunks_by_size(&[], 10, 50).is_empty());
    }

    #[test]
    fn differences_say_what_differs() {
        let r = |flags: &[&str], date: &str| MessageRef {
            flags: flags.iter().copied().collect(),
            internal_date: date.to_string(),
            ..Default::default()
        };
        let d = Difference {
            source: r(&["\\Seen"], D1),
            dest: r(&[], D2),
            flags_differ: true,
            internal_date_differs: true,
        };
        assert_eq!(
            d.what(),
            format!(
                "flags (\\Seen) on the source, () on the destination; internal date {D1} on the \
                 source, {D2} on the destination"
            )
        );
    }

    #[test]
    fn header_descriptions_name_the_message() {
        let (date, from, subject) = describe_header(
            b"From: Alice <alice@example.com>\r\nSubject: Hello\r\nDate: Mon, 17 Jul 2023 02:44:25 -0700\r\n\r\n",
        );
        assert_eq!(from.as_deref(), Some("alice@example.com"));
        assert_eq!(subject.as_deref(), Some("Hello"));
        assert!(date.is_some_and(|d| d.starts_with("2023-07-17")));
    }
}
